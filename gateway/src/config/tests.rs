use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn creds() -> Overrides {
    vec![
        ("cert", "/c.crt".into()),
        ("key", "/c.key".into()),
        ("trust_anchors", "/ca.crt".into()),
    ]
}

#[test]
fn config_defaults_are_linkerd_ports() {
    let c = Config::load(None, &env(&[]), &creds()).unwrap();
    assert_eq!(c.listen.port(), 4143);
    assert_eq!(c.admin_listen.port(), 4191);
    assert_eq!(c.gateway_suffixes, vec!["svc.cluster.local"]);
    assert_eq!(c.detect_timeout, Duration::from_secs(10));
}

#[test]
fn config_env_overrides_file_and_flags_override_env() {
    let file = write(
        "precedence",
        "listen: 127.0.0.1:1000\nadmin_listen: 127.0.0.1:1001\nlog: debug\n",
    );
    let e = env(&[
        ("MESHGATE_LISTEN", "127.0.0.1:2000"),
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.east.local.,svc.west.local",
        ),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "500ms"),
    ]);
    let mut flags = creds();
    flags.push(("log", "warn".into()));
    let c = Config::load(Some(&file), &e, &flags).unwrap();
    assert_eq!(c.listen, "127.0.0.1:2000".parse().unwrap());
    assert_eq!(c.admin_listen, "127.0.0.1:1001".parse().unwrap());
    assert_eq!(
        c.gateway_suffixes,
        vec!["svc.east.local.", "svc.west.local"]
    );
    assert_eq!(c.detect_timeout, Duration::from_millis(500));
    assert_eq!(c.log, "warn");
}

#[test]
fn meshgate_env_wins_over_linkerd_env() {
    let e = env(&[("MESHGATE_LOG", "debug"), ("LINKERD2_PROXY_LOG", "trace")]);
    assert_eq!(Config::load(None, &e, &creds()).unwrap().log, "debug");
}

#[test]
fn endpoints_flag_lists_several_addresses_per_name() {
    let mut flags = creds();
    flags.push((
        "endpoints",
        "a.ns.svc.cluster.local:80=127.0.0.1:1,a.ns.svc.cluster.local:80=127.0.0.1:2,b.ns.svc.cluster.local:81=127.0.0.1:3".into(),
    ));
    let c = Config::load(None, &env(&[]), &flags).unwrap();
    assert_eq!(c.endpoints["a.ns.svc.cluster.local:80"].len(), 2);
    assert_eq!(
        c.endpoints["b.ns.svc.cluster.local:81"],
        vec!["127.0.0.1:3".parse().unwrap()]
    );
}

#[test]
fn config_check_reports_every_error() {
    let file = write(
        "bad",
        "listen: not-an-address\nbogus: 1\nconnect_timeout: soon\nmax_connections: -3\ngateway_suffixes: ['bad suffix']\nendpoints:\n  web.ns.svc.cluster.local: ['127.0.0.1:1']\n  10.0.0.1:80: []\n",
    );
    let problems = Config::load(Some(&file), &env(&[]), &Vec::new())
        .unwrap_err()
        .0;
    let text = problems.join("\n");
    for needle in [
        "listen",
        "unknown key bogus",
        "connect_timeout",
        "max_connections",
        "gateway_suffixes",
        "\"web.ns.svc.cluster.local\" must be name:port",
        "\"10.0.0.1:80\" has no addresses",
        "no credentials",
        "no trust anchors",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn yaml_syntax_error_is_reported_with_the_file() {
    let file = write("syntax", "listen: [\n");
    let problems = Config::load(Some(&file), &env(&[]), &creds())
        .unwrap_err()
        .0;
    assert!(problems[0].contains("config.yaml"), "{problems:?}");
}

#[test]
fn identity_dir_supplies_cert_key_and_anchors() {
    let flags = vec![("identity_dir", "/var/run/meshgate/tls".to_string())];
    let c = Config::load(None, &env(&[]), &flags).unwrap();
    let (cert, key, anchors) = c.credential_paths();
    assert_eq!(cert.unwrap(), Path::new("/var/run/meshgate/tls/tls.crt"));
    assert_eq!(key.unwrap(), Path::new("/var/run/meshgate/tls/tls.key"));
    assert_eq!(anchors.unwrap(), Path::new("/var/run/meshgate/tls/ca.crt"));
}

#[test]
fn effective_config_roundtrips_through_yaml() {
    let c = Config::load(None, &env(&[]), &creds()).unwrap();
    let file = write("roundtrip", &c.to_yaml());
    assert_eq!(
        Config::load(Some(&file), &env(&[]), &Vec::new()).unwrap(),
        c
    );
}

#[test]
fn linkerd_proxy_environment_configures_a_gateway_pod() {
    let e = env(&[
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "[::]:4191"),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.cluster.local.",
        ),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "2s"),
        ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "30s"),
        ("LINKERD2_PROXY_LOG", "warn,linkerd=info"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true"),
        ("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "5m"),
        ("MESHGATE_CERT", "/c.crt"),
        ("MESHGATE_KEY", "/c.key"),
    ]);
    let c = Config::load(None, &e, &Vec::new()).unwrap();
    assert_eq!(c.listen, "[::]:4143".parse().unwrap());
    assert_eq!(c.admin_listen, "[::]:4191".parse().unwrap());
    assert!(
        c.trust_anchors_pem
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(
        c.identity_name.as_deref(),
        Some("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(c.gateway_suffixes, vec!["svc.cluster.local."]);
    assert_eq!(c.detect_timeout, Duration::from_secs(2));
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
    assert_eq!(c.log, "warn,linkerd=info");
    assert!(c.shutdown_endpoint_enabled);
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(300));
}

#[test]
fn bad_boolean_and_identity_name_are_reported() {
    let e = env(&[
        ("MESHGATE_SHUTDOWN_ENDPOINT_ENABLED", "perhaps"),
        ("MESHGATE_IDENTITY_NAME", "not a name"),
    ]);
    let problems = Config::load(None, &e, &creds()).unwrap_err().0.join("\n");
    assert!(
        problems.contains("MESHGATE_SHUTDOWN_ENDPOINT_ENABLED"),
        "{problems}"
    );
    assert!(problems.contains("identity_name"), "{problems}");
}

#[test]
fn response_timeouts_is_a_key_of_the_file() {
    let file = write(
        "timeouts",
        "response_timeouts:\n  web.ns.svc.cluster.local:80: 2s\n  api.ns.svc.cluster.local:8080: 500ms\n",
    );
    let c = Config::load(Some(&file), &env(&[]), &creds()).unwrap();
    assert_eq!(
        c.response_timeouts["web.ns.svc.cluster.local:80"],
        Duration::from_secs(2)
    );
    assert_eq!(
        c.response_timeouts["api.ns.svc.cluster.local:8080"],
        Duration::from_millis(500)
    );
}

#[test]
fn bad_values_name_the_key_as_written_and_the_expected_form() {
    let mut flags = creds();
    flags.push(("endpoints", "bad".into()));
    flags.push(("log_format", "xml".into()));
    let file = write("forms", "connect_timeout: soon\nmax_connections: many\n");
    let e = env(&[("MESHGATE_DNS_SERVERS", "10.0.0.10")]);
    let problems = Config::load(Some(&file), &e, &flags).unwrap_err().0;
    let expected = [
        "--endpoint: expected NAME:PORT=IP:PORT",
        "--log-format: expected text or json, got \"xml\"",
        "config.yaml: connect_timeout: expected a duration",
        "config.yaml: max_connections: expected a whole number",
        "MESHGATE_DNS_SERVERS: expected a comma-separated list (in YAML, a list), each item an address",
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn every_key_has_its_own_meshgate_variable() {
    for key in KEYS {
        let var = format!("MESHGATE_{}", key.name.to_ascii_uppercase());
        assert_eq!(key.env()[0], var);
    }
    let e = env(&[("MESHGATE_IDENTITY_SVC_NAME", "identity.example")]);
    let c = Config::load(None, &e, &creds()).unwrap();
    assert_eq!(c.identity_svc_name, "identity.example");
}

#[test]
fn run_check_prints_every_key_unset_ones_as_null() {
    let c = Config::load(None, &env(&[]), &creds()).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&c.to_yaml()).unwrap();
    let serde_norway::Value::Mapping(map) = yaml else {
        panic!("a mapping");
    };
    assert_eq!(map.len(), KEYS.len());
    for key in KEYS {
        assert!(map.contains_key(key.name), "{} missing", key.name);
    }
    assert_eq!(map["response_timeout"], serde_norway::Value::Null);
    assert_eq!(map["identity_svc_addr"], serde_norway::Value::Null);
    assert_eq!(map["cert"], serde_norway::Value::from("/c.crt"));
}

#[test]
fn per_key_checks_name_the_key() {
    let file = write(
        "checks",
        "connect_timeout: 0s\nmax_header_list_size: 10\nworkers: 0\nresponse_timeout: 0s\n",
    );
    let problems = Config::load(Some(&file), &env(&[]), &creds())
        .unwrap_err()
        .0
        .join("\n");
    for needle in [
        "connect_timeout must be greater than zero",
        "max_header_list_size 10 must be between 1024",
        "workers 0 must be within 1..=1024",
        "response_timeout must be greater than zero",
    ] {
        assert!(
            problems.contains(needle),
            "missing {needle:?} in:\n{problems}"
        );
    }
}

/// `text` as a config file with credentials set: the config, or every problem on one line each.
fn from_yaml(name: &str, text: &str) -> Result<Config, String> {
    Config::load(Some(&write(name, text)), &env(&[]), &creds()).map_err(|p| p.0.join("\n"))
}

#[test]
fn a_meshed_endpoint_is_a_map_or_the_text_form_and_plain_strings_keep_working() {
    let yaml = "endpoints:\n  podinfo.test.svc.cluster.local:9898:\n    - 10.0.0.12:9898\n    - addr: 10.0.0.13:9898\n      identity: podinfo.test.serviceaccount.identity.linkerd.cluster.local\n      protocol: h2\n      opaque_port: 4143\n    - 10.0.0.14:9898;identity=podinfo.test.serviceaccount.identity.linkerd.cluster.local\n";
    let c = from_yaml("meshed", yaml).unwrap();
    let list = &c.endpoints["podinfo.test.svc.cluster.local:9898"];
    assert!(list[0].is_plain());
    assert_eq!(list[1].hint, Some(crate::upstream::Hint::H2));
    assert_eq!(list[1].opaque_port, Some(4143));
    assert!(list[2].identity.is_some());
    // What `run --check` prints loads back to the same endpoints.
    let again = from_yaml("meshed-again", &c.to_yaml()).unwrap();
    assert_eq!(again.endpoints, c.endpoints);
}

#[test]
fn a_bad_meshed_endpoint_names_its_target_and_field() {
    let e = from_yaml("meshed-bad", "endpoints:\n  a.ns.svc.cluster.local:80:\n    - addr: 10.0.0.1:80\n      opaque_port: 4143\n")
        .unwrap_err();
    assert!(
        e.contains("a.ns.svc.cluster.local:80") && e.contains("needs an identity"),
        "{e}"
    );
    let e = from_yaml(
        "meshed-bad2",
        "endpoints:\n  a.ns.svc.cluster.local:80:\n    - identity: x.y\n",
    )
    .unwrap_err();
    assert!(e.contains("needs addr"), "{e}");
}

#[test]
fn upstream_protocol_is_per_target_and_a_bad_value_is_named() {
    let c = from_yaml(
        "upstream-protocol",
        "upstream_protocol:\n  legacy.ns.svc.cluster.local:80: http1\n  grpc.ns.svc.cluster.local:50051: http2\n",
    )
    .unwrap();
    assert_eq!(
        c.upstream_protocol["legacy.ns.svc.cluster.local:80"],
        Preference::Http1
    );
    assert_eq!(
        c.upstream_protocol["grpc.ns.svc.cluster.local:50051"],
        Preference::Http2
    );
    let e = from_yaml(
        "upstream-protocol-bad",
        "upstream_protocol:\n  legacy.ns.svc.cluster.local:80: http3\n  10.0.0.1:80: http1\n",
    )
    .unwrap_err();
    assert!(
        e.contains("\"http3\" is not one of auto, http1, http2"),
        "{e}"
    );
}

#[test]
fn splits_are_maps_of_weighted_backends_in_yaml_flags_and_env() {
    let yaml = "splits:\n  podinfo.test.svc.cluster.local:9898:\n    - to: podinfo-v1.test.svc.cluster.local:9898\n      weight: 90\n    - podinfo-v2.test.svc.cluster.local:9898*10\n";
    let c = from_yaml("splits", yaml).unwrap();
    let split = &c.splits["podinfo.test.svc.cluster.local:9898"];
    assert_eq!(split.len(), 2);
    assert_eq!((split[0].weight, split[1].weight), (90, 10));
    let again = from_yaml("splits-again", &c.to_yaml()).unwrap();
    assert_eq!(again.splits, c.splits);
    let e = env(&[(
        "MESHGATE_SPLITS",
        "web.ns.svc.cluster.local:80=a.ns.svc.cluster.local:80*3+b.ns.svc.cluster.local:80",
    )]);
    let c = Config::load(None, &e, &creds()).unwrap();
    assert_eq!(c.splits["web.ns.svc.cluster.local:80"][1].weight, 1);
    for (yaml, says) in [
        (
            "splits:\n  web.ns.svc.cluster.local:80:\n    - to: a.ns.svc.cluster.local:80\n      weight: 0\n",
            "no backend has a weight",
        ),
        (
            "splits:\n  web.ns.svc.cluster.local:80:\n    - a.ns.svc.cluster.local*2\n",
            "must be name:port",
        ),
        (
            "splits:\n  web.elsewhere.example:80:\n    - a.ns.svc.cluster.local:80\n",
            "not a usable target",
        ),
        (
            "splits:\n  web.ns.svc.cluster.local:80:\n    - to: a.ns.svc.cluster.local:80\n      share: 2\n",
            "share",
        ),
    ] {
        let e = from_yaml("splits-bad", yaml).unwrap_err();
        assert!(e.contains(says), "{yaml}: {e}");
    }
}

#[test]
fn failover_is_a_map_of_fallback_lists_in_yaml_and_env() {
    let yaml = "failover:\n  podinfo.test.svc.cluster.local:9898:\n    - podinfo-backup.test.svc.cluster.local:9898\n    - gateway: 198.51.100.7:4143\n      identity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.west.cluster.local\n    - to: podinfo-v1.test.svc.cluster.local:9898\nfailover_hold_down: 1m\n";
    let c = from_yaml("failover", yaml).unwrap();
    let list = &c.failover["podinfo.test.svc.cluster.local:9898"];
    assert_eq!(list.len(), 3);
    assert_eq!(list[1].label(), "gateway:198.51.100.7:4143");
    assert_eq!(c.failover_hold_down, std::time::Duration::from_secs(60));
    let again = from_yaml("failover-again", &c.to_yaml()).unwrap();
    assert_eq!(again.failover, c.failover);
    let e = env(&[(
        "MESHGATE_FAILOVER",
        "web.ns.svc.cluster.local:80=b.ns.svc.cluster.local:80+gateway=10.0.0.7:4143;identity=gw.west.example;target=web.ns.svc.cluster.local:80",
    )]);
    let c = Config::load(None, &e, &creds()).unwrap();
    assert_eq!(c.failover["web.ns.svc.cluster.local:80"].len(), 2);
    for (yaml, says) in [
        (
            "failover:\n  web.ns.svc.cluster.local:80:\n    - web.ns.svc.cluster.local:80\n",
            "falls over to itself",
        ),
        (
            "failover:\n  web.ns.svc.cluster.local:80:\n    - gateway: 10.0.0.7:4143\n",
            "needs identity",
        ),
        (
            "failover:\n  web.ns.svc.cluster.local:80:\n    - {to: a.ns.svc.cluster.local:80, gateway: 10.0.0.7:4143}\n",
            "either {to}",
        ),
        (
            "failover:\n  web.elsewhere.example:80:\n    - a.ns.svc.cluster.local:80\n",
            "not a usable target",
        ),
        ("failover_hold_down: 0s\n", "failover_hold_down"),
    ] {
        let e = from_yaml("failover-bad", yaml).unwrap_err();
        assert!(e.contains(says), "{yaml}: {e}");
    }
}
